"""Training, evaluation and run directories (everything that is not the model).

Entry points: ``ctr.train.run.train_run`` (train and test one config) and ``ctr.train.saved_run`` (read a finished
run back). The loop (``loop.fit``) is made of parts that each hold one concern: ``data_source`` (batches),
``epoch`` (optimizer steps), ``evaluation`` (AUC, logloss), ``early_stopping`` and ``run_dir`` (the run's files).
"""

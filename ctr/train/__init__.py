"""Training, evaluation and run directories (everything that is not the model). Entry points: ``ctr.train.run``."""

"""TorchServe side: the model archive and its handler."""

"""Serving: TF Serving (official or the local drop-in) and TorchServe, and clients for both."""

"""TF Serving side: SavedModel export in TF Serving's layout."""

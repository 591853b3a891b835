"""Training side: data ingest (rasterio), pair simulation, patching, models, training loop."""

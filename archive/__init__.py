"""Archive scale: many pairs encoded as Ray tasks, catalogued as STAC, rasters as COGs."""

"""Reading weight files safely and turning them into a family's module: files, refusals, the format registry."""

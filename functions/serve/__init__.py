"""serve: the dataset's FastAPI app behind mangum (Lambda)."""

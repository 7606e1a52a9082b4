"""One module per stage; each declares the stage's actor on import."""

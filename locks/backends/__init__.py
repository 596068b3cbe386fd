"""Lock backends: the database (any Django database Ringmaster supports) and Redis."""

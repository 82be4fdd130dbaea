"""Application code deployed to Lambda with app.py (Chalice packages this folder)."""

"""Thin data access, one module per aggregate; SQL lives in dispatcher.db.queries."""

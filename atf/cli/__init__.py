"""Console entry points (atf-train, atf-eval, atf-predict, atf-data)."""

"""capprof's routing science as a plain library: no web framework and no SQL in here."""

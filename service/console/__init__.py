"""The admin web console (/console): server-rendered pages over the same stores, reports and routing path."""

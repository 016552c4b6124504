"""The data behind every plot and table of a report: small frozen objects computed from the cost
model, a hardware profile or a search's results, tested on their own (nothing here draws)."""

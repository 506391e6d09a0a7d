"""``edgefleet models package``: a scoring image built from Debian packages and local wheels."""

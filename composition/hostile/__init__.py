"""``edgefleet chaos hostile``: what an attacker sends (mutated route, query and topic text;
malformed and oversized MQTT packets from an authenticated device) against the parsers and a
running hub on each broker mode, and the counts: inputs tried, crashes, hangs, leaks."""

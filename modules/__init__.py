"""Edge modules shipped with the product (camera, featurizer, classifier, scoring host, sensor)."""

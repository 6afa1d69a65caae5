"""kNN, linear probe and the feature extraction they share."""

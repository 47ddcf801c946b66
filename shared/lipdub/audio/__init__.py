"""Audio stage: speech → one mouth shape per 25-fps frame."""

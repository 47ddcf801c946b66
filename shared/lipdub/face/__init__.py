"""Face landmarks: the MediaPipe face mesh and the index groups every stage shares."""

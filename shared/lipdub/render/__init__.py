"""Render stage: re-draw the mouth region of each frame for a target mouth opening."""

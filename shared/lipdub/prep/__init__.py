"""Face preparation: turns a source video into a reusable source track (see lipdub.prep.source).

Modules: pose (head pose against the canonical mean face), smoothing (jitter removal), tracking (face
tracks and target choice), analysis (the streaming face pass), gate (quality gate), track (the stored
format), cache (prep once per source), preflight (a quick verdict from a few seconds).
"""

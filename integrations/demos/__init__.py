"""Demos of the tasks whose reports need the modalities (video frames, edit pairs)."""

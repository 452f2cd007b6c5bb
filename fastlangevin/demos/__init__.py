"""Demos behind ``fastlangevin demo NAME`` (the README's main job)."""

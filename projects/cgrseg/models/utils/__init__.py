"""Checkpoint reading and checking, label checks and tracing helpers;
import them from their modules."""

"""Checkpoint reading and checking, and tracing helpers;
import them from their modules."""

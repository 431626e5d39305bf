"""Frames in, frames out: sources (images, folders, videos, cameras, streams), sinks (files,
videos, window), the threaded file pipeline and the live loop."""

"""Frames in, frames out: sources (images, folders, videos, cameras, streams), sinks (files,
videos through PyAV, window), temporal stability, the threaded file pipeline and the live
loop."""

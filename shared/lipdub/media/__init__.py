"""ffmpeg-backed media I/O: probing, frame streams, audio decoding."""

"""Camera module: frames from photos, video files, RTSP/HTTP MJPEG streams or V4L2 devices; sent on
as JPEG or scored in process (see docs/camera.md)."""

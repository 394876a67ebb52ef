"""The media service: job photos (upload, storage backends, consent, signed links, review, tombstones).
`python -m services.media`; docs/media.md."""

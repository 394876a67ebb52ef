"""Media's rows as proto messages, shared by the servicer's parts."""

from __future__ import annotations

from typing import Any

from cws.media.v1 import media_pb2

from libs.common.convert import to_ts


def photo(row: Any) -> media_pb2.Photo:
    message = media_pb2.Photo(
        id=str(row.id),
        org_id=str(row.org_id),
        booking_id=str(row.booking_id),
        status=row.status,
        mime=row.mime,
        ext=row.ext,
        bytes=row.bytes,
        sha256=row.sha256,
        width=row.width,
        height=row.height,
        uploaded_by=row.uploaded_by,
        uploader_role=row.uploader_role,
        created_at=to_ts(row.created_at),
        review_note=row.review_note or "",
        reviewed_by=row.reviewed_by or "",
        storage_key=row.storage_key,
    )
    if row.reviewed_at is not None:
        message.reviewed_at.CopyFrom(to_ts(row.reviewed_at))
    return message

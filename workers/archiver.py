"""The archiver: flags old or chosen emails as archived."""

from __future__ import annotations

from shared import archive
from shared.bus import stage_actor
from shared.db import session_scope
from shared.messages import ArchiveEmails


@stage_actor("archiver")
def archiver(message: ArchiveEmails) -> None:
    with session_scope() as session:
        if message.email_ids:
            archive.archive(session, message.email_ids)
        else:
            archive.archive_old(session)

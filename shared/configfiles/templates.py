"""Applying a templates file: every template checked, then stored."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from shared.configfiles.files import ConfigFile, Tally, validate
from shared.configfiles.references import check_unique
from shared.configfiles.schema import TemplatesFile
from shared.models import Template

log = logging.getLogger(__name__)


def apply_templates(session: Session, file: ConfigFile) -> Tally:
    """Create or update the templates a file declares; raise before any write."""
    spec = validate(file, TemplatesFile)
    check_unique(file, "templates", [t.id for t in spec.templates])

    tally = Tally()
    for template in spec.templates:
        row = session.get(Template, template.id)
        created = row is None
        if row is None:
            row = Template(id=template.id)
            session.add(row)
        row.subject = template.subject
        row.text = template.text
        row.html = template.html
        tally.add("template", created=created)
        log.info(
            "template %s %s from %s",
            template.id,
            "created" if created else "updated",
            file.name,
        )
    return tally


def template_to_dict(template: Template) -> dict[str, Any]:
    return {
        "id": template.id,
        "subject": template.subject,
        "text": template.text,
        "html": template.html,
    }

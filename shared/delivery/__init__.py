"""Delivering outgoing email over SMTP, exactly once if at all possible.

A SendEmail carries a chunk of one account's emails. A sender thread
handles a chunk in three steps:

1. **Claim** (``claims``): one statement takes every email of the chunk
   that is still pending and due, so a duplicate queue message, a retry or
   a second worker given an overlapping chunk finds nothing left to send.
2. **Send** each over the thread's pooled connection of the account.
3. **Record** (``records``): ``processed``, or the failure, is committed
   right after the server's reply and before the thread sends the next
   email (or, with ``SYSMAIL_SENDER_WINDOW`` above 1, once the thread has
   that many accepted). The threads of a worker share those commits.

The window. Between the server's final reply to DATA and the commit of
step 3 lie a few milliseconds: the writing thread's wait for the threads
still sending, and one statement shared with whatever other threads of the
worker finished by then. If the process dies inside it (power loss,
SIGKILL), the server has the mail but the email stays ``in_process``; after
``claim_timeout`` the scheduler gives it back to pending and it is sent a
second time. This is the only way an email goes out twice: at most one
email per sender thread of the killed worker (``SYSMAIL_SENDER_WINDOW``
emails per thread when it is set higher). Closing it would need the
server to take part, and SMTP has no idempotency key. The rest of a killed
worker's claimed chunk was never sent; it goes back the same way and is
sent once. So does the rest of a chunk cut short by an unexpected error
(the database gone, say): dramatiq's retry of the chunk finds those emails
``in_process`` and leaves them to the scheduler.
"""

from __future__ import annotations

from shared.delivery.claims import Outcome
from shared.delivery.send import DeliveryRefused, deliver, deliver_chunk

__all__ = ["DeliveryRefused", "Outcome", "deliver", "deliver_chunk"]

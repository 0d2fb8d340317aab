"""Small record factories for the joiner tests."""

from schemas.records import Action, Impression


def imp(rid: str, t: int, item: int = 7, user: int = 1) -> Impression:
    return Impression(request_id=rid, user_id=user, item_id=item, event_time_ms=t,
                      slots=[1, 2], ids=[hash(rid) & 0xFFFF, item], dense=[0.5])


def act(rid: str, t: int, kind: str = "click", item: int = 7, user: int = 1) -> Action:
    return Action(request_id=rid, user_id=user, item_id=item, action_type=kind, event_time_ms=t)


class Journal(dict):
    """The job's checkpointed MapState in a test: pass it as the core's ``journal``; a copy
    of it is a checkpoint."""

    def __call__(self, key: str, data: bytes | None) -> None:
        if data is None:
            self.pop(key, None)
        else:
            self[key] = data

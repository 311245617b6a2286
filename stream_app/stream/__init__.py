"""The stream: topics, worker, replay, alerts consumer and demo."""

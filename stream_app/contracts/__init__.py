"""Event contracts: typed records and their validated JSON codec (see ``schemas/``)."""

from stream_app.contracts.codec import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    decode_alert,
    decode_event,
    decode_label,
    decode_label_fields,
    decode_label_us,
    decode_transaction,
    decode_transaction_us,
    encode_alert,
    encode_label,
    encode_transaction,
)
from stream_app.contracts.records import (
    ALERT_NAMESPACE,
    Alert,
    Label,
    Reason,
    Transaction,
    alert_id,
    from_epoch_us,
    to_epoch_us,
)

__all__ = [
    "ALERT_NAMESPACE",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "Alert",
    "Label",
    "Reason",
    "Transaction",
    "alert_id",
    "decode_alert",
    "decode_event",
    "decode_label",
    "decode_label_fields",
    "decode_label_us",
    "decode_transaction",
    "decode_transaction_us",
    "encode_alert",
    "encode_label",
    "encode_transaction",
    "from_epoch_us",
    "to_epoch_us",
]

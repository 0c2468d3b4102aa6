"""ESP with keys: SA files (Wireshark's ``esp_sa`` format), decryption, and confirming probe tags inside ESP.

Without keys tracer ties ESP to probes by ``(SPI, sequence)`` (see
:mod:`tracer.analysis.correlate`); with keys, :func:`tracer.esp.confirm.confirm`
decrypts those packets and reads the probe tag inside. This package exports the
pure parts (keys, decryption); :mod:`tracer.esp.confirm`, which re-reads capture
files and runs tshark, is imported from its module so that importing
``tracer.esp`` never pulls in the capture edge.
"""

from tracer.esp.decrypt import (
    EspError,
    EspIntegrityError,
    EspMalformed,
    EspPlain,
    EspUnsupported,
    decrypt_esp,
    esp_offset,
    open_esp,
)
from tracer.esp.keys import (
    AUTHENTICATIONS,
    ENCRYPTIONS,
    EspSA,
    format_esp_sa,
    parse_esp_sa,
    read_esp_sa_file,
    write_esp_sa_file,
)

__all__ = [
    "AUTHENTICATIONS",
    "ENCRYPTIONS",
    "EspError",
    "EspIntegrityError",
    "EspMalformed",
    "EspPlain",
    "EspSA",
    "EspUnsupported",
    "decrypt_esp",
    "esp_offset",
    "format_esp_sa",
    "open_esp",
    "parse_esp_sa",
    "read_esp_sa_file",
    "write_esp_sa_file",
]

"""ComfyUI-Login imports pycryptodome as "Crypto"; Debian installs it as
"Cryptodome". This module makes the first name the second: submodules
(Crypto.Cipher, ...) are then found on Cryptodome's path."""
import sys

import Cryptodome

sys.modules[__name__] = Cryptodome

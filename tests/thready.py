"""Imported by a zygote in a test: starts a thread at import, so the zygote must refuse to fork."""
import threading
import time

threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()

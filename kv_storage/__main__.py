import sys

from kv_storage.cli import main

sys.exit(main())

import sys

from edge_agent.edgehub.service import main

sys.exit(main())

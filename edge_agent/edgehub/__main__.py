import sys

from edge_agent.edgehub.launch import main

sys.exit(main())

"""The emulated FPGA accelerator: BFP graph rewrite, cycle model, device process, client."""

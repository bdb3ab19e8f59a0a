"""System tests: the emulator, the real image build, the browser and the SAM template / Dockerfile lint."""

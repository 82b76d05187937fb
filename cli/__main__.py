from semcodec.cli.main import run

run()

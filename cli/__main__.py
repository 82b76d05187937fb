from semcodec.cli.main import main

main(prog_name="semcodec")

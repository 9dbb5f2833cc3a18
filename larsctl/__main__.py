from larsctl.cli import main

main()

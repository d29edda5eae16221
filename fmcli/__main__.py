from fmcli.cli import main

main()

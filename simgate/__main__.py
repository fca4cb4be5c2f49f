from simgate.gateway.cli import main

main()

from ftmbctl.cli import main

main()

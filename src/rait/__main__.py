from rait.cli import main

main()

from anatoseg.cli import main

main()
